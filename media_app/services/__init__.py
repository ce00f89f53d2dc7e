"""Business logic. Views and tasks call these functions; they own transactions and events."""
