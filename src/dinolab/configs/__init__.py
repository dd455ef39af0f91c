"""Training presets as YAML files (`dinolab train preset=NAME`)."""
