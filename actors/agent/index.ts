import { placeholderService } from '../kit.js';

export const service = placeholderService('agent', 'TLS agent: remote tell and ask between nodes (issue 4)');
