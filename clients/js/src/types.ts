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

// -- groups (DESIGN.md "Groups") ---------------------------------------------------------

export type Group = Schemas["GroupOut"];
export type GroupRole = Schemas["MemberOut"]["role"];
export type GroupOut = Schemas["GroupBody"];
export type CreateGroupOut = Schemas["GroupCreated"];
export type GroupMember = Schemas["MemberOut"];
export type GroupMembersPage = Schemas["MembersPage"];
export type GroupEvent = Schemas["GroupEventOut"];
export type GroupEventsPage = Schemas["GroupEventsPage"];
export type GroupEntry = Schemas["GroupEntry"];
export type GroupNewsEntry = Schemas["GroupNewsEntry"];
export type GroupReadOut = Schemas["GroupReadOut"];
export type RoleOut = Schemas["RoleOut"];

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
  /** Every member's role, by user id: complete unless `stale`. */
  members: Record<string, GroupRole>;
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
  /** The details and the member list are to be fetched (a group first heard of through
   * an event that does not say them all). */
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
