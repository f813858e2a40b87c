-- The vendor's own count of what a job cost, where it reports one (Vidu's credits), next to the list-price
-- estimate in cost_usd.
ALTER TABLE jobs ADD COLUMN vendor_credits REAL;
