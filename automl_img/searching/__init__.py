"""The search: its options, the loop that runs trials until the budget is spent, one process per trial."""
