"""A support bot as production bots run it: FastAPI, RunnableWithLedgerHistory over
ChatLedgerMessageHistory, under gunicorn with several uvicorn worker processes.

Configured by $CHATLEDGER_URL and $CHATLEDGER_API_KEY. The fake model answers "answer to
<question>"; a question containing "nul" gets an answer with a NUL character, which the
server refuses to store (422 invalid_text): that turn must be answered with an error.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from pydantic import BaseModel

from chatledger import ChatLedgerError
from chatledger.langchain import ChatLedgerMessageHistory, RunnableWithLedgerHistory


class EchoModel(FakeListChatModel):
    """FakeListChatModel that answers the last human message."""

    def _call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        question = str(messages[-1].content)
        return f"answer with \u0000 to {question}" if "nul" in question else f"answer to {question}"


prompt = ChatPromptTemplate.from_messages(
    [("system", "You are a support bot."), MessagesPlaceholder("history"), ("human", "{question}")]
)
chain = RunnableWithLedgerHistory(
    prompt | EchoModel(responses=["unused"]),
    lambda session_id: ChatLedgerMessageHistory(session_id),
    input_messages_key="question",
    history_messages_key="history",
)
app = FastAPI()


class Turn(BaseModel):
    session_id: str
    question: str


@app.get("/healthz")
async def healthz() -> dict[str, Any]:
    return {"pid": os.getpid()}


@app.post("/chat")
async def chat(turn: Turn) -> Any:
    config = {"configurable": {"session_id": turn.session_id}}
    try:
        reply = await chain.ainvoke({"question": turn.question}, config=config)
    except ChatLedgerError as exc:
        # The turn is not stored: answer an error, never a 200.
        return JSONResponse({"error": exc.code or "chatledger_error", "detail": str(exc)}, status_code=503)
    return {"answer": reply.content, "pid": os.getpid()}
