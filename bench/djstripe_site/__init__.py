"""A minimal Django project around dj-stripe's webhook view, served in the benchmark beside ours."""
