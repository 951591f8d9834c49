"""Add, list and revoke the people who label ROIs on the labeling server.

::

    python -m slapp.labeling.labelers --add alice
    python -m slapp.labeling.labelers --add bob --output_json bob.json
    python -m slapp.labeling.labelers --list
    python -m slapp.labeling.labelers --revoke alice

``--add`` creates a labeler and prints their sign-in token once: only its
SHA-256 digest is stored, so a lost token cannot be shown again (revoke the
labeler and add them under another name). ``--revoke`` refuses the labeler's
token and every session signed in with it from then on; their labels stay.
"""
import hashlib
import secrets
import sys

import marshmallow as mm

from slapp.errors import SlappError
from slapp.utils.cli import run_main
from slapp.utils.files import write_json_atomically
from slapp.utils.query_utils import DbConnection, labeling_connection
from slapp.utils.schema import ArgSchema, ArgSchemaParser

# 32 random bytes: a token no one guesses, short enough to paste
TOKEN_BYTES = 32


class LabelerException(SlappError):
    """The labeler cannot be added or revoked as asked."""


def hash_secret(secret: str) -> str:
    """The SHA-256 hex digest stored for a token or session id.

    Parameters
    ----------
    secret : str
        A token or session id.

    Returns
    -------
    str
        64 hex digits.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    """A random URL-safe secret (a token or a session id)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def add_labeler(dbconn: DbConnection, name: str) -> str:
    """Create a labeler; returns their token (stored only as its hash).

    Raises
    ------
    LabelerException
        If the name is empty or taken.
    """
    if not name.strip():
        raise LabelerException("a labeler's name must not be empty")
    token = new_secret()
    rows = dbconn.insert("INSERT INTO labelers (name, token_hash) VALUES (%s, %s) "
                         "ON CONFLICT (name) DO NOTHING RETURNING id",
                         (name, hash_secret(token)))
    if not rows:
        raise LabelerException(f"there is already a labeler named {name!r}")
    return token


def revoke_labeler(dbconn: DbConnection, name: str) -> None:
    """Refuse a labeler's token and sessions from now on.

    Raises
    ------
    LabelerException
        If there is no such labeler or they are revoked already.
    """
    rows = dbconn.query("UPDATE labelers SET revoked_at = now() "
                        "WHERE name = %s AND revoked_at IS NULL RETURNING id", (name,))
    if not rows:
        known = dbconn.query("SELECT revoked_at FROM labelers WHERE name = %s", (name,))
        if not known:
            raise LabelerException(f"there is no labeler named {name!r}")
        raise LabelerException(f"labeler {name!r} was revoked already "
                               f"({known[0]['revoked_at']:%Y-%m-%d %H:%M %Z})")


def list_labelers(dbconn: DbConnection) -> list[dict]:
    """Every labeler with their number of current labels, oldest first."""
    return dbconn.query(
        "SELECT labelers.name, labelers.created_at, labelers.revoked_at, "
        "labelers.token_hash IS NOT NULL AS can_sign_in, "
        "count(labels.id) AS n_labels FROM labelers "
        "LEFT JOIN roi_labels AS labels ON labels.labeler_id = labelers.id "
        "AND labels.superseded_by IS NULL GROUP BY labelers.id ORDER BY labelers.id")


class LabelersSchema(ArgSchema):
    add = mm.fields.Str(metadata={"description": "create a labeler of this name and print "
                                                "their sign-in token (shown only once)"})
    list = mm.fields.Bool(dump_default=False,
                          metadata={"description": "list the labelers and their label counts"})
    revoke = mm.fields.Str(metadata={"description": "refuse this labeler's token and "
                                                   "sessions from now on; labels stay"})

    @mm.validates_schema
    def one_action(self, data, **kwargs):
        if sum([bool(data.get("add")), bool(data.get("list")),
                bool(data.get("revoke"))]) != 1:
            raise mm.ValidationError("give one of --add NAME, --list, --revoke NAME")


class LabelersOutputSchema(mm.Schema):
    name = mm.fields.Str(metadata={"description": "the labeler added or revoked"})
    token = mm.fields.Str(metadata={"description": "the new labeler's token (--add only)"})
    labelers = mm.fields.List(mm.fields.Dict(), metadata={"description": "--list only"})


class Labelers(ArgSchemaParser):
    """Add, list or revoke labelers."""

    default_schema = LabelersSchema
    default_output_schema = LabelersOutputSchema

    def run(self, dbconn: DbConnection) -> dict:
        """Do the one action asked for, print its outcome and return it."""
        if self.args.get("add"):
            name = self.args["add"]
            output = {"name": name, "token": add_labeler(dbconn, name)}
            print(f"labeler {name!r} added; their sign-in token (shown only this once):")
            print(output["token"])
        elif self.args.get("revoke"):
            output = {"name": self.args["revoke"]}
            revoke_labeler(dbconn, output["name"])
            print(f"labeler {output['name']!r} revoked")
        else:
            rows = list_labelers(dbconn)
            output = {"labelers": [
                {"name": row["name"], "created_at": row["created_at"].isoformat(),
                 "revoked_at": row["revoked_at"] and row["revoked_at"].isoformat(),
                 "can_sign_in": row["can_sign_in"], "n_labels": row["n_labels"]}
                for row in rows]}
            for row in rows:
                state = (f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"]
                         else "active" if row["can_sign_in"] else "imported, cannot sign in")
                print(f"{row['name']}  {state}  {row['n_labels']} labels")
            if not rows:
                print("no labelers yet; add one with --add NAME")
        if self.args.get("output_json"):
            write_json_atomically(self.args["output_json"], self.get_output_json(output))
        return output


def main() -> None:  # pragma: no cover - thin CLI
    """Run the command against the labeling database from the environment."""
    parser = Labelers(logger_name="Labelers")
    with labeling_connection(interactive=True) as dbconn:
        parser.run(dbconn)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main(main, "labelers"))
