"""Who may do what: users, access rules, tokens, and the gate every request passes."""
