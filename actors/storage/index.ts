import { placeholderService } from '../kit.js';

export const service = placeholderService('storage', 'Storage: devices, pools, shares and volumes');
