import { placeholderService } from '../kit.js';

export const service = placeholderService('cdb', 'Cluster database: durable objects, per-node meta and stats, watches (issue 3), replication (issue 5)');
