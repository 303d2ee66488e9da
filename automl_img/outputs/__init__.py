"""What a study gives: the exported bundle, predictions, the HTML report."""
