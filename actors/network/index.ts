import { placeholderService } from '../kit.js';

export const service = placeholderService('network', 'Networks: bridges and VLANs for systems');
