/** The values an app sees. Wire shapes come from the generated OpenAPI types (schema.ts),
 * never written by hand, so a contract change shows up as a type error here. */
import type { components } from "./schema.js";

type Schemas = components["schemas"];

// Until the service's document has groups: a group message has `group_id` and `seq`, and
// no `to`.
export type Message = Omit<Schemas["MessageOut"], "to"> & {
  to: string | null;
  group_id: string | null;
  seq: number | null;
};
export type Entry =
  | { version: number; kind: "message"; created_at: string; data: Message }
  | Exclude<Schemas["Entry"], { kind: "message" }>
  | GroupEntry
  | GroupNewsEntry;
export type SyncPage = Omit<Schemas["SyncPage"], "entries"> & { entries: Entry[] };
export type RecallData = Schemas["RecallData"];
export type ReadData = Schemas["ReadData"];
export type LoginOut = Schemas["LoginOut"];
export type SendOut = Schemas["SendOut"];
export type AckOut = Schemas["AckOut"];
export type Conversation = Schemas["ConversationOut"];
export type ConversationsPage = Schemas["ConversationsPage"];
export type HistoryPage = Schemas["HistoryPage"];
export type ReadOut = Schemas["ReadOut"];

// -- groups (DESIGN.md "Groups") ---------------------------------------------------------
// Written by hand until the service's OpenAPI document has them; then aliases as above.

export type GroupRole = "owner" | "admin" | "member";

export interface Group {
  group_id: string;
  title: string;
  owner: string;
  member_count: number;
  latest_seq: number;
  joined_seq: number;
  read_seq: number;
  large: boolean;
  created_at: string;
}

export interface GroupOut {
  group: Group;
}

export interface CreateGroupOut {
  group: Group;
  version: number;
}

export interface GroupMember {
  user_id: string;
  role: GroupRole;
  joined_seq: number;
  read_seq: number;
}

export interface GroupMembersPage {
  members: GroupMember[];
  next_after: string | null;
}

export interface GroupEvent {
  seq: number;
  kind: string;
  created_at: string;
  actor: string | null;
  data: Record<string, unknown>;
}

export interface GroupEventsPage {
  events: GroupEvent[];
  next_after_seq: number;
  latest_seq: number;
  has_more: boolean;
}

export interface GroupEntry {
  version: number;
  kind: "group";
  created_at: string;
  data: { group_id: string; event: GroupEvent };
}

export interface GroupNewsEntry {
  version: number;
  kind: "group_news";
  created_at: string;
  data: { group_id: string; seq: number };
}

export interface GroupReadOut {
  group_id: string;
  read_seq: number;
  version: number;
}

export interface RoleOut {
  user_id: string;
  role: GroupRole;
}

export interface Session {
  server: string;
  user_id: string;
  device_id: string;
  access_token: string;
}

export interface Recall {
  message_id: number;
  from: string;
  to: string | null;
  group_id: string | null;
  recalled_at: string;
}

export interface ReadReceipt {
  reader: string;
  peer: string;
  up_to_message_id: number;
}

/** What this device knows of a group it is a member of. */
export interface GroupState {
  group_id: string;
  /** null until the group's details are fetched (a device learns of a group from an event
   * that names only its id). */
  title: string | null;
  owner: string | null;
  /** This user's role. */
  role: GroupRole | null;
  member_count: number | null;
  large: boolean;
  /** The log position: every event up to this seq is applied here (0: none yet; the first
   * read of the log then starts where the server says this user joined). */
  seq: number;
  /** The highest seq the server signalled (group_news, or an event past a gap): above
   * `seq`, the log is to be read up to here. Stored with the page that signalled it, so a
   * crash before the log is read loses nothing. */
  news: number;
  /** This user's read cursor in the group. */
  read_seq: number;
  /** The details (title, owner, counts) are to be fetched again. */
  stale: boolean;
}

export type OutboxState = "pending" | "sent" | "failed";

export interface OutboxItem {
  client_msg_id: string;
  /** The recipient of a direct message; null for a group message. */
  to: string | null;
  /** The group of a group message (absent in items stored by an older SDK: direct). */
  group_id?: string | null;
  body: string;
  state: OutboxState;
  message_id: number | null;
  error: string | null;
}

/** The other party of a direct message, seen from `user` (null for a group message). */
export function peerOf(message: Message, user: string): string | null {
  if (groupOf(message) !== null) return null;
  return message.from === user ? message.to : message.from;
}

/** The group of a message, null for a direct one. */
export function groupOf(message: Message): string | null {
  return (message as { group_id?: string | null }).group_id ?? null;
}
