"""Message content: what an outbox row says, rendered at send time from current data.

ctx = await load_context(conn, notification, settings=settings)
composed = render(notification, ctx, settings=settings)
"""

from shared.messaging.context import ContextError, MessageContext, load_context, load_contexts
from shared.messaging.render import (
    Composed,
    RenderError,
    TemplateMissing,
    compile_templates,
    render,
)

__all__ = [
    "compile_templates",
    "Composed",
    "ContextError",
    "MessageContext",
    "RenderError",
    "TemplateMissing",
    "load_context",
    "load_contexts",
    "render",
]
