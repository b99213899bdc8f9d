"""Workflow graphs, as data: reading them, binding a job's fields to node inputs, checking
them against a server's node definitions, and converting the editor's GUI saves to the API
format. Nothing here talks to a server or touches a job's files."""
