"""Templates to messages: the store, console versions, the sandbox, the one linter, the event renderer."""
