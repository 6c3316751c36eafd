"""Layer *presentation*: figures, console tables and progress, report rendering (the
report's pages come from the Jinja2 templates in ``templates/``)."""
