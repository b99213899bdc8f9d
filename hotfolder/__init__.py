"""hotfolder: a hot-folder daemon for ComfyUI."""

__version__ = "0.1.0"
