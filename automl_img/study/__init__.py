"""The Optuna study: storage, configuration, the search loop."""
