"""Looking inside a model: attention maps per layer and head, and heatmaps of them."""

from lmforge.interpret.attention import attention_maps, find_cjk_font, plot_attention, select

__all__ = ["attention_maps", "find_cjk_font", "plot_attention", "select"]
