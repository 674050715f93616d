-- The CRM store, version 3: reporter contact details are encrypted at rest (issue #6, SECURITY.md).
-- The sink writes name, email, phone and handle as AES-256-GCM ciphertext ('enc:v1:<key id>:<base64>',
-- bound to the report id and column); only the notifier decrypts them, with CRM_CONTACT_ENCRYPTION_KEY.
-- key_id names the key of each row so a key rotation can find the rows still under an old key.
ALTER TABLE reporter_contacts ADD COLUMN key_id text;

-- No clear text from now on. NOT VALID: rows stored before this version are not checked (encrypt them
-- with `crm-pipeline store encrypt-contacts`, then VALIDATE CONSTRAINT reporter_contacts_encrypted).
ALTER TABLE reporter_contacts ADD CONSTRAINT reporter_contacts_encrypted CHECK (
    (name IS NULL OR name LIKE 'enc:v1:%')
    AND (email IS NULL OR email LIKE 'enc:v1:%')
    AND (phone IS NULL OR phone LIKE 'enc:v1:%')
    AND (handle IS NULL OR handle LIKE 'enc:v1:%')
) NOT VALID;

CREATE INDEX reporter_contacts_key_idx ON reporter_contacts (key_id);
