"""Talking to ComfyUI: the HTTP client, the WebSocket listener, the pool of servers that
share the work, and the explanation of what a server said about a rejected or failed prompt.
Nothing here knows about inboxes or job files."""
