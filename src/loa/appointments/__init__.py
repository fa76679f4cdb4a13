"""Appointments by site capacity and priority group: a ledger in Redis, runs, replies.

`loa appointments allocate` places registrants in sessions (see `service`); the schedule it
writes is the audience of an ordinary campaign whose templates read `{{ appointment.date }}`;
replies confirm, give places back (which go to whoever waits first) or move to a later session.
"""

from loa.appointments.service import Appointments, RepliesReport, RunReport

__all__ = ["Appointments", "RepliesReport", "RunReport"]
