/**
 * Folder delivery targets (docs/destinations.md): a folder of the server's file system, set
 * by an operator, that receives a schedule's files or its data lake (docs/bi/data-lake.md).
 * The delivery records accept the new target type.
 */
export const up = /* sql */ `
ALTER TABLE deliveries DROP CONSTRAINT deliveries_target_type_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_target_type_check
  CHECK (target_type IN ('s3', 'sftp', 'email', 'webhook', 'folder'));
ALTER TABLE schedule_run_deliveries DROP CONSTRAINT schedule_run_deliveries_target_type_check;
ALTER TABLE schedule_run_deliveries ADD CONSTRAINT schedule_run_deliveries_target_type_check
  CHECK (target_type IN ('s3', 'sftp', 'email', 'webhook', 'folder'));
`;
