"""Judge rubrics as versioned data: one `<id>.v<version>.json` file per rubric version."""
