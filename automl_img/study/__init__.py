"""What is stored about a study: its storage, configuration, trials and folder."""
