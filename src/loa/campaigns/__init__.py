"""Campaigns: plans, audiences, templates, routing and the planner."""
