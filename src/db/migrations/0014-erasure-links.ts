/**
 * Erasure deletes a customer's own row (docs/erasure.md). Revenue events stay for
 * bookkeeping, so their link to the customer becomes optional and is cleared when the
 * customer is deleted, instead of deleting the events with it.
 */
export const up = /* sql */ `
ALTER TABLE revenue_events ALTER COLUMN customer_id DROP NOT NULL;
ALTER TABLE revenue_events DROP CONSTRAINT revenue_events_customer_id_fkey;
ALTER TABLE revenue_events ADD CONSTRAINT revenue_events_customer_id_fkey
  FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE SET NULL;
`;
