"""An experiment: the YAML schema, the user's task module, and the plan built from both."""
