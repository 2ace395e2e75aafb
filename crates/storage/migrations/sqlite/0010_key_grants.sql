-- Cuttle schema 10: what a register-target key lets its target claim (JSON: environments, roles,
-- reusable). NULL for other keys, and for register-target keys made before: those grant no
-- environment and no role, so their target registers for an operator to place.
ALTER TABLE api_keys ADD COLUMN target_grant TEXT NULL;
