"""People's data: erase and export a person, and delete what is older than its retention."""
