"""Models of decision support: value sets, versioned rules, recommendations."""
