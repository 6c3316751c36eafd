"""Layer *presentation*: figures, console tables and progress, report rendering."""
