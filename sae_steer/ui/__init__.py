"""What people see: text and HTML views, figures, widgets, the writeup and the CLI.

The top floor: it may import every stage, and no module of the library imports it.
Its modules are imported one by one (``from sae_steer.ui.views import card_html``), so
matplotlib and ipywidgets load only where they are used.
"""
