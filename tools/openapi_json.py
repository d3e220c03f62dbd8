"""Write the service's OpenAPI document as JSON (stdout, or the path given), sorted and
stable, for the TypeScript SDK's type generator (clients/js: `npm run gen:types`)."""

from __future__ import annotations

import json
import sys

from app.config import Settings
from app.main import create_app


def main() -> None:
    # The schema does not depend on the database; an in-memory URL keeps this side-effect free.
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"))
    text = json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
