"""Layer *analysis*: fits of decay curves and the theory they are compared with."""
