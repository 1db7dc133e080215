"""``python -m studio_spawner.lifespan``: run the lifespan service."""

from .app import main

if __name__ == "__main__":
    main()
