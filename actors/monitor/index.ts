import { placeholderService } from '../kit.js';

export const service = placeholderService('monitor', 'Monitor: health score, alarms, primary election and failover');
