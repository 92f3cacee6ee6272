/** What `ha.show` answers (acp ha status): the node's local manager, and the HA manager's view on the primary. */
import type { Message } from '../../runtime/messages.js';
import type { GuestState, LocalState } from './local.js';
import { fenceDeadline } from './manager.js';
import type { HaConfig, HaNodeState, HaState } from './protocol.js';
import type { ManagerState } from './state.js';

export interface HaView extends Message {
  type: 'ha.show';
  node: string;
  /** The newest term this node's monitor knows, and the primary it follows. */
  term: number;
  primary: string | null;
  local: {
    holding: boolean;
    /** Left of its lease (0 when it holds none). */
    leaseRemainingMs: number;
    guests: Record<string, GuestState>;
    failed: string[];
    ordersTerm: number;
    orders: { system: string; want: string; target?: string | undefined }[];
  } | null;
  /** Only on the node running the HA manager. */
  manager: {
    term: number;
    systems: { id: string; state: HaState; node: string | null; target: string | null; relocates: number }[];
    nodes: { name: string; state: HaNodeState; lastReportAgoMs: number; fenceInMs: number | null; running: string[] }[];
  } | null;
}

export function haView(input: { self: string; now: number; config: HaConfig; term: number; primary: string | null; manager: ManagerState | null; local: LocalState | null; guests: Record<string, GuestState> }): HaView {
  const { now, local, manager } = input;
  return {
    type: 'ha.show',
    node: input.self,
    term: input.term,
    primary: input.primary,
    local:
      local === null
        ? null
        : {
            holding: local.holding,
            leaseRemainingMs: local.holding ? Math.max(0, Math.round(local.leaseUntil - now)) : 0,
            guests: input.guests,
            failed: [...local.failed],
            ordersTerm: local.ordersTerm,
            orders: local.orders.map((order) => ({ system: order.system, want: order.want, ...(order.target === undefined ? {} : { target: order.target }) })),
          },
    manager:
      manager === null
        ? null
        : {
            term: manager.term,
            systems: Object.entries(manager.systems)
              .sort(([a], [b]) => a.localeCompare(b))
              .map(([id, sys]) => ({ id, state: sys.state, node: sys.node, target: sys.target, relocates: sys.relocates })),
            nodes: Object.entries(manager.nodes)
              .sort(([a], [b]) => a.localeCompare(b))
              .map(([name, node]) => ({
                name,
                state: node.state,
                lastReportAgoMs: Math.max(0, Math.round(now - node.lastReport)),
                fenceInMs: node.state === 'fence' ? Math.max(0, Math.round(fenceDeadline(node, input.config) - now)) : null,
                running: [...node.running],
              })),
          },
  };
}
