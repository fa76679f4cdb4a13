"""Follow-ups: a question a campaign asks, and its replies stored as structured answers."""
