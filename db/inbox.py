"""The inbox table: which events a service has handled, recorded with their effect.

A service declares ``class Inbox(InboxFields, ItsBase, table=True)`` (``db.outbox``) and,
in the transaction that applies an event::

    async with sessions() as session, session.begin():
        if not await first_time(session, Inbox, ctx.event_id):
            return                       # handled before: change nothing twice
        session.add(...)                 # the event's effect

The id and the effect commit together or not at all. Two deliveries of one event racing
each other both insert the id; the second fails on the primary key, its transaction rolls
back, and its delivery stays pending until it is handed out again and finds the id.
"""

from sqlalchemy import delete
from sqlmodel.ext.asyncio.session import AsyncSession

from db.outbox import InboxFields


async def first_time(session: AsyncSession, model: type[InboxFields], event_id: str) -> bool:
    """Record ``event_id`` in ``session``'s transaction; False if it was recorded before."""
    if await session.get(model, event_id) is not None:
        return False
    session.add(model(event_id=event_id))
    return True


async def forget_all(session: AsyncSession, model: type[InboxFields]) -> int:
    """Delete every record, so replayed events are handled again; how many there were."""
    result = await session.exec(delete(model))
    return int(result.rowcount)
