"""Layer *symbolic*: exact structured one-step Jacobians derived with SymPy, and their
printing as text, LaTeX and Markdown."""
