"""Models arrive with the chat issue."""
