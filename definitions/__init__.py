"""Real workflow definitions run by statesaga; checkout first."""
