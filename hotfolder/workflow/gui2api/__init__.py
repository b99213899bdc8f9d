"""GUI-format workflows (the editor's "Save") converted to the API format the server runs."""

from hotfolder.workflow.gui2api.convert import Conversion, build, convert
from hotfolder.workflow.gui2api.detect import is_gui_workflow, node_types

__all__ = ["Conversion", "build", "convert", "is_gui_workflow", "node_types"]
