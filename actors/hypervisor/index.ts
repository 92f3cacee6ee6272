import { placeholderService } from '../kit.js';

export const service = placeholderService('hypervisor', 'Hypervisor: decides where systems run and drives their VMM containers (issue 6)');
