"""The writeup: execute the numbered notebooks and export them as standalone HTML."""
from sae_steer.ui.writeup.assets import widget_assets
from sae_steer.ui.writeup.execute import execute_notebook, find_notebooks, inject_parameters
from sae_steer.ui.writeup.export import export_writeup, key_results, main, render_index

__all__ = ["execute_notebook", "export_writeup", "find_notebooks", "inject_parameters",
           "key_results", "main", "render_index", "widget_assets"]
