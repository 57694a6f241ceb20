"""Small shared helpers: atomic files, seeding, progress bars, devices. Imports nothing else of bespoke."""
