"""Acting on segments: triggers, deliveries to channels, experiments with holdouts."""
