"""The web console for agents, department staff and supervisors."""
