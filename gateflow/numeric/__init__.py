"""Layer *numeric*: backends, compiled (lambdified) evaluators and the all-lag backward
sweep with its observers."""
