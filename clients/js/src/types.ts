/** The values an app sees. Wire shapes come from the generated OpenAPI types (schema.ts),
 * never written by hand, so a contract change shows up as a type error here. */
import type { components } from "./schema.js";

type Schemas = components["schemas"];

export type Message = Schemas["MessageOut"];
export type Entry = Schemas["Entry"];
export type SyncPage = Schemas["SyncPage"];
export type RecallData = Schemas["RecallData"];
export type ReadData = Schemas["ReadData"];
export type LoginOut = Schemas["LoginOut"];
export type SendOut = Schemas["SendOut"];
export type AckOut = Schemas["AckOut"];
export type Conversation = Schemas["ConversationOut"];
export type ConversationsPage = Schemas["ConversationsPage"];
export type HistoryPage = Schemas["HistoryPage"];
export type ReadOut = Schemas["ReadOut"];

export interface Session {
  server: string;
  user_id: string;
  device_id: string;
  access_token: string;
}

export interface Recall {
  message_id: number;
  from: string;
  to: string;
  recalled_at: string;
}

export interface ReadReceipt {
  reader: string;
  peer: string;
  up_to_message_id: number;
}

export type OutboxState = "pending" | "sent" | "failed";

export interface OutboxItem {
  client_msg_id: string;
  to: string;
  body: string;
  state: OutboxState;
  message_id: number | null;
  error: string | null;
}

/** The other party of a message, seen from `user`; for a group message, its group. */
export function peerOf(message: Message, user: string): string {
  if (message.to === null) return message.group_id ?? "";
  return message.from === user ? message.to : message.from;
}
