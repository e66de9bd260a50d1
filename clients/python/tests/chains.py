"""RunnableWithMessageHistory chains over FakeListChatModel, recording what the model saw."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory


class Recorder:
    """Sits between prompt and model and keeps every prompt the model was given."""

    def __init__(self) -> None:
        self.prompts: list[list[BaseMessage]] = []

    def __call__(self, value: Any) -> Any:
        messages = value.to_messages() if hasattr(value, "to_messages") else list(value)
        self.prompts.append(messages)
        return value

    @property
    def last(self) -> list[str]:
        return [str(m.content) for m in self.prompts[-1]]


def prompt_chain(
    responses: list[str],
    get_history: Callable[[str], BaseChatMessageHistory],
    *,
    recorder: Recorder | None = None,
    model: Runnable[Any, Any] | None = None,
) -> RunnableWithMessageHistory:
    """A support-bot prompt with the history in a placeholder (``history_messages_key``)."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a support bot."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = prompt | RunnableLambda(recorder or Recorder()) | (model or FakeListChatModel(responses=responses))
    return RunnableWithMessageHistory(
        chain, get_history, input_messages_key="question", history_messages_key="history"
    )


def model_chain(
    responses: list[str],
    get_history: Callable[[str], BaseChatMessageHistory],
    *,
    recorder: Recorder | None = None,
    model: Runnable[Any, Any] | None = None,
) -> RunnableWithMessageHistory:
    """A chat model wrapped directly: no ``history_messages_key``, so LangChain reads the
    history a second time after the call to tell history from input."""
    chain = RunnableLambda(recorder or Recorder()) | (model or FakeListChatModel(responses=responses))
    return RunnableWithMessageHistory(chain, get_history)


def config(session_id: str) -> dict[str, Any]:
    return {"configurable": {"session_id": session_id}}
