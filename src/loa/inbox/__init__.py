"""The hotline inbox: conversations with citizens, and the cases operators answer."""

from loa.inbox.service import Case, Inbox, SyncReport

__all__ = ["Case", "Inbox", "SyncReport"]
