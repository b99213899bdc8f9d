"""The command-line verbs besides `run` (check, submit, status, convert, init, demo,
install-service): each module is one verb, called by `hotfolder.cli`."""
