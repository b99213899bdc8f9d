"""GUI-format workflows (the editor's "Save") converted to the API format the server runs:
`detect` tells a GUI save from an API prompt, `graph` reads one, `flatten` resolves its groups,
reroutes and subgraphs, `widgets` maps widget values to inputs, `convert` builds the prompt."""
